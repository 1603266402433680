"""conf/ installs as the package ``lth_wandb.conf`` (see pyproject.toml), so an installed lth-train finds its
configs through Hydra's pkg:// search path, not only from a source checkout.

Importing it registers the typed schema ``base_config`` that config.yaml starts from, so composing these
configs works from any entry point (lth-train, Hydra's compose API in a notebook or a test).
"""

from hydra.core.config_store import ConfigStore

from lth_wandb.app.config import Config

ConfigStore.instance().store(name="base_config", node=Config)
