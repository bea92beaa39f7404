"""The cold key index: local cache, lookups in index objects, queries across both tiers."""
