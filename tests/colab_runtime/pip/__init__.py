"""Stand-in for pip (tests only): records what it was asked to install, installs nothing."""
