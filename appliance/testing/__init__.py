"""Test support shipped with the package: speech synthesis for fixtures, fakes of the ports."""
