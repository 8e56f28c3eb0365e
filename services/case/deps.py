"""What case's routes get at run time: `rt: CaseRuntime`, its settings and CaseContext typed."""

from typing import Annotated

from fastapi import Depends
from servicekit.runtime import Runtime, runtime

from case.context import CaseContext
from case.settings import CaseSettings

CaseRuntime = Annotated[Runtime[CaseSettings, CaseContext], Depends(runtime)]
