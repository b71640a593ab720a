"""Authentication backend: the session's user comes with its customer profile, in one query."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class UserWithProfileBackend(ModelBackend):
    """Every page needs to know whether its user has a customer profile (the navigation offers
    orders only to those who can see them). Joining the profile into the query that loads the
    user answers that without a query of its own on every request."""

    def get_user(self, user_id):
        User = get_user_model()
        user = User._default_manager.select_related("customer").filter(pk=user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None

    async def aget_user(self, user_id):
        # The same join for async views (request.auser()): ModelBackend's own aget_user would
        # leave the profile to a lazy query, which the event loop refuses.
        User = get_user_model()
        user = await User._default_manager.select_related("customer").filter(pk=user_id).afirst()
        return user if user is not None and self.user_can_authenticate(user) else None
