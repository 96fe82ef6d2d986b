"""Stage runners: chain the steps in memory from one product to the next."""
