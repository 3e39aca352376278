"""The one base class of every error a user can cause (a bad param, checkpoint, store or stage input).

Stages catch `InputError` and print its message as one line (`rlinterp.runtime.stage_main`); anything else
is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Something the user gave is wrong; the message names it and says what was expected."""
