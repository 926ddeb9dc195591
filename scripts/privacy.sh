#!/usr/bin/env bash
# The accuracy cost of differential privacy: FedAvg on PhysioNet 2012 split
# by ICU type (4 sites), without DP and with central DP-FedAvg at epsilon 8,
# 3 and 1 (delta 1e-5, updates clipped to 0.5, the noise planned so that
# the job's 10 rounds spend the budget), over 3 seeds; writes
# docs/privacy-physionet.md. Needs ../shared/data/physionet2012. Takes
# about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
go run ./cmd/cohort sim --dataset physionet --compare-epsilon 0,8,3,1 --clip-norm 0.5 \
  --seeds 1,2,3 --markdown docs/privacy-physionet.md
