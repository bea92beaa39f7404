"""The cold tier: catalog (the tier's own commit log), tiering dispatcher, cold reader."""
