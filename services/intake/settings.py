"""intake's own settings, on top of the shared ones."""

from eventkit.settings import Settings


class IntakeSettings(Settings):
    phone_default_region: str = "US"  # how to read phone numbers written without a +country code
