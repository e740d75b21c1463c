"""The test suite; what several test files share lives in tests/helpers/."""
