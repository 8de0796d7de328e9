"""Live oversight (issue 9): auditors list, watch and terminate live sessions, and policy
can require that a shell is watched before it starts (docs/oversight.md)."""
