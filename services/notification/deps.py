"""What notification's routes get at run time: `rt: NotificationRuntime`, its settings and NotificationContext typed."""

from typing import Annotated

from fastapi import Depends
from servicekit.runtime import Runtime, runtime

from notification.context import NotificationContext
from notification.settings import NotificationSettings

NotificationRuntime = Annotated[Runtime[NotificationSettings, NotificationContext], Depends(runtime)]
