"""Every scenario, registered in `benchlib.registry` on import, in the order they run by default."""

from . import one_disk  # noqa: F401
from . import disk_limit  # noqa: F401
from . import parallel_disks  # noqa: F401
from . import many_disks  # noqa: F401
from . import idle_cost  # noqa: F401
from . import store_at_scale  # noqa: F401
from . import recovery_at_scale  # noqa: F401
from . import libvirt_one_disk  # noqa: F401
from . import mirror  # noqa: F401
from . import validate_eta  # noqa: F401
from . import serve_budget  # noqa: F401
from . import verify_cost  # noqa: F401
from . import fleet  # noqa: F401
from . import fleet_store_at_scale  # noqa: F401
