# Licensed to the Apache Software Foundation (ASF) under one
# or more contributor license agreements.  See the NOTICE file
# distributed with this work for additional information
# regarding copyright ownership.  The ASF licenses this file
# to you under the Apache License, Version 2.0 (the
# "License"); you may not use this file except in compliance
# with the License.  You may obtain a copy of the License at
#
#   http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing,
# software distributed under the License is distributed on an
# "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
# KIND, either express or implied.  See the License for the
# specific language governing permissions and limitations
# under the License.
"""Find the logger MetaSchedule created for a task.

The C++ ``TuneContext`` keeps its logging function out of Python's reach, so the strategy looks up
the Python logger that ``tune_tir`` / ``tune_tasks`` created for the task
(``tvm.s_tir.meta_schedule.logging.task_<i>_<name>``, which writes to ``work_dir/logs``).
"""

from __future__ import annotations

import logging

_TASK_PREFIX = "tvm.s_tir.meta_schedule.logging.task_"


def task_logger(task_name: str) -> logging.Logger:
    """Return the task's MetaSchedule logger, or ``ms_droplet.<task_name>`` when there is none."""
    suffix = "_" + task_name[:100]
    found = None
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith(_TASK_PREFIX) and name.endswith(suffix):
            middle = name[len(_TASK_PREFIX) : -len(suffix)]
            if middle.isdigit():
                found = name  # the most recently created one wins
    if found is not None:
        return logging.getLogger(found)
    return logging.getLogger("ms_droplet").getChild(task_name)
