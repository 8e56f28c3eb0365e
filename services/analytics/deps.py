"""What analytics' routes get at run time: `rt: AnalyticsRuntime`, its settings typed (it has
no context of its own)."""

from typing import Annotated

from fastapi import Depends
from servicekit.runtime import Runtime, runtime

from analytics.settings import AnalyticsSettings

AnalyticsRuntime = Annotated[Runtime[AnalyticsSettings, None], Depends(runtime)]
