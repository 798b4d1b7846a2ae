"""Built-in FFN variants, one file each; see core.variants for the registry and the contract."""
