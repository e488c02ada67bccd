"""qosgate node agent: keeps every kubepods ancestor's memory.min covering its children and publishes the
node's protection truth (see agent/README.md)."""
