# The GPU Cloud Manager document's "Python Client Example", verbatim except for the two settings, which the test
# passes in (the document hard-codes http://localhost:8080/api/v1 and a placeholder key).
import os

import requests

BASE_URL = os.environ["EXAMPLE_BASE_URL"]
API_KEY = os.environ["EXAMPLE_API_KEY"]

headers = {
    "Authorization": f"Bearer {API_KEY}",
    "Content-Type": "application/json"
}

# Search for GPU offers
response = requests.get(
    f"{BASE_URL}/offers/search",
    params={
        "provider": "vast_ai",
        "gpu_model": "RTX 4090",
        "max_price": 2.0,
        "available": True
    },
    headers=headers
)
offers = response.json()["data"]

# Create an instance from the first offer
if offers:
    offer_id = offers[0]["provider_id"]
    create_response = requests.post(
        f"{BASE_URL}/instances",
        json={
            "provider": "vast_ai",
            "offer_id": offer_id,
            "image": "pytorch/pytorch:latest",
            "label": "My ML Training Instance"
        },
        headers=headers
    )
    instance = create_response.json()["data"]
    print(f"Created instance: {instance['id']}")
