"""Adversary tests: what an attacker with legitimate credentials must not be able to do."""
