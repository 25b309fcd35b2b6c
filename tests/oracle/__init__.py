"""Test-only oracles: independent reimplementations kept to check the real thing
(STYLE.md: "a second copy … keep it only as a test oracle, and say so")."""
