"""Rules as data: rules/*.toml compiled into checks, and the predicates they may name."""
