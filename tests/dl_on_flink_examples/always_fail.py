"""dl-on-flink's ``dl-on-flink-pytorch/src/test/resources/always_fail.py`` (flink-extended/dl-on-flink),
unchanged but for this docstring and the log file it appends to (so the test can see the attempts):
node 1 fails after a second on every attempt while the others wait, so the cluster fails over again and
again — until the job is cancelled."""

import logging
import sys
import time

logger = logging.getLogger(__file__)


def map_func(context):
    key = context.identity
    index = context.index
    fail_num = context.get_current_attempt_index()
    logger.info(key + " fail num: " + str(fail_num))
    with open(context.get_property("log"), "a") as fh:
        fh.write(f"{key} {fail_num}\n")
    sys.stdout.flush()

    if 1 == index:
        time.sleep(1)
        logger.info(key + " failover!")
        raise Exception("fail over!")
    else:
        while True:
            time.sleep(5)
