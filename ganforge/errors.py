class GanforgeError(Exception):
    """An error the user can fix: the message says what went wrong and what to do.

    The command line prints it without a traceback and exits with status 2.
    """
