# The extension implements the pure module's API; type checkers read it from there.
from ._pure import PidFileReader as PidFileReader
from ._pure import PidFileWriter as PidFileWriter
from ._pure import PidRecord as PidRecord
from ._pure import _classify as _classify
from ._pure import _identity_at as _identity_at
from ._pure import _parse_stat as _parse_stat
from ._pure import _pidfd_level as _pidfd_level
from ._pure import _pin_and_classify as _pin_and_classify
from ._pure import _set_pidfd_level as _set_pidfd_level
from ._pure import is_process_alive as is_process_alive
from ._pure import process_start_time as process_start_time
