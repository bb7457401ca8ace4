"""Training-time alignment: DPO, MODPO, BOND / J-BOND, WARP, and weight-space merging."""
