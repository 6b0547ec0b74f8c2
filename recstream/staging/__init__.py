"""The staging run: a secured multi-broker stack, the roles as supervised processes, load,
faults, verdicts and a report (`recstream staging`, docs/reliability.md "Staging")."""
