# The VibeCaaS document's Python SDK example, verbatim; the lines after the class are not in the document.
import requests

class VibeCaaSClient:
    def __init__(self, api_key):
        self.api_key = api_key
        self.base_url = "https://api.vibecaas.com"
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json"
        }
    
    def list_apps(self):
        response = requests.get(
            f"{self.base_url}/api/v1/apps",
            headers=self.headers
        )
        return response.json()
    
    def create_app(self, app_data):
        response = requests.post(
            f"{self.base_url}/api/v1/apps",
            headers=self.headers,
            json=app_data
        )
        return response.json()


# Not in the document: use the class against the service the test started. Its API key comes from the environment,
# and the class hard-codes the production URL, so its base_url is pointed at that service; the create body is the
# document's "Create Application" example.
import json
import os

client = VibeCaaSClient(os.environ["EXAMPLE_API_KEY"])
client.base_url = os.environ["EXAMPLE_BASE_URL"]
before = client.list_apps()
created = client.create_app({
    "name": "my-app",
    "description": "My awesome application",
    "framework": "fastapi",
    "github_repo": "https://github.com/user/repo",
    "branch": "main",
    "environment_variables": {
        "DEBUG": "false",
        "DATABASE_URL": "postgresql://..."
    },
    "port": 8000,
    "cpu_limit": 1000,
    "memory_limit": 2048,
    "storage_limit": 5120,
    "gpu_enabled": False,
    "health_check_path": "/health"
})
after = client.list_apps()
print(json.dumps({"before": before, "created": created, "after": after}))
