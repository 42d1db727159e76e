# Source after gpu_env.sh in a GPU job that sets R (results folder) and T0 (its start, seconds): defines
#   bench GPU NAME TIMEOUT PARTS SIZE-ARGS VARIANTS [VAR=VALUE ...]
# one `dartool bench` arm on one card (paired rounds under CUDA graphs, 6 rounds), its log in $R/NAME.log, its
# results under $R/NAME, a status line in $R/status. TIMEOUT must cover the bench's own estimate for the paired
# part (~202 s at SiT-B/2, ~292 s at XL/2 b32) or it skips it (session 29).
bench() {
  local G=$1 N=$2 TO=$3 P=$4 S=$5 V=$6; shift 6
  env "$@" CUDA_VISIBLE_DEVICES=$G timeout $TO python3 -m dartool bench --parts $P --paired-rounds 6 \
    --paired-mode cudagraphs $S --variants $V --compile-budget $((TO - 15)) --time-budget $((TO - 10)) \
    --out $R/$N > $R/$N.log 2>&1
  echo "$N ($*) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
