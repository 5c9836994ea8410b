"""Memory versions: list them with their statuses, activate one (a staged version or a rollback), learn a new one
from the reviewed false rejects."""
