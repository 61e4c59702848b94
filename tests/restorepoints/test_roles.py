"""The deployment grants the restore-point calls exactly what they need, no more."""
from __future__ import annotations

import re
from pathlib import Path

from shared.adapters.restore_points import ARM_ACTIONS

VM_ACCESS = Path(__file__).resolve().parents[2] / "infra" / "app" / "vm-access.bicep"


def test_the_restore_point_role_grants_exactly_the_calls_the_adapter_makes():
    """An operator deploying infra/ gets a role with every action restore points need and nothing else."""
    text = VM_ACCESS.read_text()
    role = text[text.index("resource restorePointRole"):text.index("resource restorePoints ")]
    actions = set(re.findall(r"'(Microsoft\.[^']+)'", role[role.index("actions:"):role.index("notActions")]))
    assert actions == set(ARM_ACTIONS)
    assert "roleDefinitionId: restorePointRole.id" in text and "assignableScopes: [resourceGroup().id]" in role
