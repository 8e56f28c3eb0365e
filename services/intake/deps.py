"""What intake's routes get at run time: `rt: IntakeRuntime`, its settings and IntakeContext typed."""

from typing import Annotated

from fastapi import Depends
from servicekit.runtime import Runtime, runtime

from intake.context import IntakeContext
from intake.group_commit import GroupCommit
from intake.settings import IntakeSettings

IntakeRuntime = Annotated[Runtime[IntakeSettings, IntakeContext], Depends(runtime)]


def group_commit(rt: Runtime[IntakeSettings, IntakeContext]) -> GroupCommit:
    """The service's one GroupCommit: interaction writes in flight share transactions."""
    if rt.context.group_commit is None:
        rt.context.group_commit = GroupCommit(
            rt.db, rt.events, rt.context.vault, rt.settings.source, in_flight=rt.settings.write_transactions
        )
    return rt.context.group_commit
