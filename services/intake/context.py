"""What intake's use cases need besides the database and the runtime: the vault, and the one
GroupCommit its interaction writes share."""

from dataclasses import dataclass

from intake.group_commit import GroupCommit
from intake.vault import Vault


@dataclass
class IntakeContext:
    vault: Vault  # the one place data keys live (behind the runtime's KeyRing too)
    group_commit: GroupCommit | None = None  # made on first use: the pool exists only once started
