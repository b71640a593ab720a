import pytest


@pytest.fixture
def client_logged_in(client, django_user_model):
    user = django_user_model.objects.create_user(username="alice", password="pw-alice-123")
    client.force_login(user)
    client.user = user
    return client
