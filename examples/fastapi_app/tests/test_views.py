# tests/test_views.py
from unittest.mock import patch, AsyncMock

def test_create_task(client):
    with patch("myapp.views.ax.enqueue") as mock_enqueue:
        mock_enqueue.return_value = AsyncMock(
            agent_id="test-uuid"
        )

        response = client.post("/api/tasks/research", json={
            "company": "Test Corp",
            "focus_areas": ["products"]
        })

        assert response.status_code == 200
        assert "agent_id" in response.json()

def test_get_status_not_found(client):
    response = client.get("/api/tasks/nonexistent/status")
    assert response.status_code == 404
