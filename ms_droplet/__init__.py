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
"""ms_droplet: Droplet Search as a TVM MetaSchedule search strategy.

Importing the package makes ``strategy="droplet"`` work in ``ms.tune_tir`` / ``ms.tune_tasks``
(and ``SearchStrategy.create("droplet")``); :func:`unregister` undoes it.
"""

from ._builder import WarmBuilder
from ._lock import WorkDirLocked
from ._picks import tuned_database
from ._registry import is_registered, register, unregister
from ._strategy import DropletStrategy
from ._version import __version__

__all__ = [
    "DropletStrategy",
    "WarmBuilder",
    "WorkDirLocked",
    "__version__",
    "is_registered",
    "register",
    "tuned_database",
    "unregister",
]

register()
