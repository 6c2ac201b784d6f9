#!/bin/bash
# The quick start's recipe plus OPTIONS, then how much of each validation sentence (<= 15 words) its
# reconstruction keeps (words), by a beam of 5 and by the quick start's beam of 20 reranked by the encoder:
#   bench/quick.sh NAME [OPTIONS...]   (writes runs/qs-NAME; needs make data)
set -e
cd "$(dirname "$0")/.."
name=$1; shift
rm -rf "runs/qs-$name"
.venv/bin/python cli.py train --data data/ptb --out "runs/qs-$name" --max-minutes 4.5 --tokenizer spm --vocab-size 4000 \
    --max-len 30 --emb-dim 128 --hidden 256 --enc-hidden 256 --z-dim 128 --dropout 0 --word-keep 0.3 --free-bits 2 --bow 2 --skip --feed-z --tie --pool mean \
    --batch-size 64 --lr 3e-3 --kl-schedule linear:0,3000 --patience 0 --select bleu --eval-every 500 --ema 0 --quiet "$@"
.venv/bin/python bench/overlap.py "runs/qs-$name" --max-tokens 15 --limit 300
.venv/bin/python bench/overlap.py "runs/qs-$name" --max-tokens 15 --limit 300 --beam 20 --rerank
