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
"""Benchmarks: ``ms-droplet bench / report / plot`` and ``python -m ms_droplet.bench.builder``.

``_config`` (what to run), ``_suites`` (named workload lists), ``_layout`` (the folder on disk,
its provenance and lock), ``_driver`` (the runs and the interleaved re-measurement),
``_exploration_copy`` (a variant's start from another run's exploration), ``_post_opt`` (TVM's
post_optimization as a strategy), ``_report`` and ``_plot`` (tables and curves from the
folder), ``builder`` (LocalBuilder against WarmBuilder). These are measurement tools, not
tests: they tune real workloads and take minutes to hours.
"""
