"""estatewatch: protocol - MQTT wire contract v1 (topics, device catalog, payloads).

Pure: no I/O except reading the bundled ``catalog_v1.toml``.
"""

from protocol import catalog, clock, messages, topics
from protocol.catalog import *  # noqa: F403
from protocol.clock import *  # noqa: F403
from protocol.messages import *  # noqa: F403
from protocol.topics import *  # noqa: F403

# the package's surface is its modules' surfaces, each listed once in its own __all__
__all__: list[str] = []
__all__ += catalog.__all__
__all__ += clock.__all__
__all__ += [name for name in messages.__all__ if name not in catalog.__all__]
__all__ += topics.__all__
