"""Task data shared by every scenario: the synthetic world and real datasets produce the same :class:`TaskData`."""
