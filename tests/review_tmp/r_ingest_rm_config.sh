#!/bin/sh
# A failed first ingest into an existing directory that is not (yet) an mqtier store deletes
# the directory's pre-existing config/, index/, checkpoint, abort, lock entries.
export PYTHONPATH=/work/main
M="/work/main/.venv/bin/python -m mqtier"
D=$(mktemp -d)
mkdir -p $D/config
cp /work/shared/fixtures/rocketmq/store-c/config/*.json $D/config/   # a broker store before its first message
cp /work/shared/fixtures/rocketmq/store-c/checkpoint $D/
echo 'not json' > /tmp/bad_$$.jsonl
echo "before: $(ls $D $D/config | tr '\n' ' ')"
$M ingest --store $D --topic t --commitlog-file-size 64K /tmp/bad_$$.jsonl; echo "rc=$?"
echo "after:  $(ls $D 2>&1 | tr '\n' ' ') config: $(ls $D/config 2>&1)"
# Variant: a running broker holds the lock of its (message-less) store; ingest exits 6 and
# still deletes the broker's config/.
D2=$(mktemp -d); mkdir -p $D2/config; cp /work/shared/fixtures/rocketmq/store-c/config/*.json $D2/config/
printf lock > $D2/lock
/work/main/.venv/bin/python -c "
import fcntl,os,time,sys; fd=os.open('$D2/lock',os.O_RDWR); fcntl.lockf(fd,fcntl.LOCK_EX,1,0); time.sleep(8)" &
LP=$!; sleep 1
echo '{"topic":"t","body":"x"}' > /tmp/good_$$.jsonl
$M ingest --store $D2 /tmp/good_$$.jsonl; echo "locked: rc=$?"
echo "locked after: $(ls $D2 | tr '\n' ' ') config: $(ls $D2/config 2>&1)"
kill $LP
