"""Make Triton 3.x's CPU interpreter (TRITON_INTERPRET=1) work with numpy >= 2.3.

The interpreter keeps scalars as 1-element arrays and converts them with ``int(array)``, which numpy
2.3+ refuses for arrays of dimension > 0 ("only 0-dimensional arrays can be converted to Python
scalars"): every ``for i in range(1, N)`` over a runtime N then fails. This wraps the patch that
gives interpreter tensors ``__index__`` so that it reads the single element. Development-only: the
compiled GPU path never imports this.
"""
from __future__ import annotations

_done = False


def patch_interpreter() -> None:
    global _done
    if _done:
        return
    try:
        import triton.runtime.interpreter as interp
    except Exception:  # pragma: no cover - triton absent or layout changed
        return
    orig = getattr(interp, "_patch_lang_tensor", None)
    if orig is None:  # pragma: no cover
        return

    def _index(self):
        data = self.handle.data
        return int(data.reshape(-1)[0]) if getattr(data, "size", 0) == 1 else int(data)

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)

    interp._patch_lang_tensor = patched
    _done = True
