#!/bin/sh
# A failed (rolled back) ingest with --queues still leaves topics.json widened.
export PYTHONPATH=/work/main
M="/work/main/.venv/bin/python -m mqtier"
D=$(mktemp -d)/s
echo '{"body":"a"}' > /tmp/ok_$$.jsonl
printf '{"body":"a"}\nnot json\n' > /tmp/bad_$$.jsonl
$M ingest --store $D --topic orders --queues 2 --commitlog-file-size 64K /tmp/ok_$$.jsonl 2>/dev/null
sha1sum $D/config/topics.json
$M ingest --store $D --topic orders --queues 16 /tmp/bad_$$.jsonl; echo "rc=$?"
sha1sum $D/config/topics.json
grep -E 'writeQueueNums|counter' $D/config/topics.json
