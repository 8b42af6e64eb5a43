"""Ray actors that own inference engines, and the pool that feeds them."""
