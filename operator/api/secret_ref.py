"""A reference to one key of a Secret: the one way a spec names a credential (the value itself never
enters a spec, a stage config, a log, an Event or the status). Its own module so that spec modules
the experiment imports (e.g. the teacher's) can use it too."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from negrl_operator.api.stage_config import Strict
from negrl_operator.api.value_rule import DNS_SUBDOMAIN, SECRET_KEY


class SecretKeyRef(Strict):
    name: Annotated[str, Field(min_length=1, max_length=253), DNS_SUBDOMAIN] = Field(
        description="Secret in the experiment's namespace."
    )
    key: Annotated[str, SECRET_KEY] = Field(
        "token", min_length=1, max_length=253, description="Key of the Secret holding the value."
    )
