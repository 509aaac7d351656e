# The CloudVPS Pro document's Python SDK example, verbatim; the lines after the class are not in the document.
import requests

class CloudVPSClient:
    def __init__(self, base_url, token):
        self.base_url = base_url
        self.headers = {
            'Authorization': f'Bearer {token}',
            'Content-Type': 'application/json',
        }

    def get_vps_list(self):
        response = requests.get(f'{self.base_url}/vps', headers=self.headers)
        return response.json()

    def create_vps(self, config):
        response = requests.post(f'{self.base_url}/vps', 
                               json=config, headers=self.headers)
        return response.json()


# Not in the document: use the class against the service the test started (its URL and a signed-in user's token
# come from the environment), with the document's create body and a real key for its elided "ssh-rsa AAAAB3...".
import json
import os

client = CloudVPSClient(os.environ["EXAMPLE_BASE_URL"], os.environ["EXAMPLE_TOKEN"])
before = client.get_vps_list()
created = client.create_vps({
    "name": "My Web Server",
    "plan_id": "plan-professional",
    "operating_system": "ubuntu-22.04",
    "ssh_keys": [os.environ["EXAMPLE_SSH_KEY"]],
})
after = client.get_vps_list()
print(json.dumps({"before": before, "created": created, "after": after}))
