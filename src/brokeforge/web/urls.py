from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from brokeforge.web import events, views

urlpatterns = [
    path("", views.server_list, name="server-list"),
    path("setup/", views.first_run, name="first-run"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="web/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("servers/<slug:name>/", views.server_detail, name="server-detail"),
    path("servers/<slug:name>/events/", events.server_events, name="server-events"),
    path("servers/<slug:name>/rows/<slug:key>/", views.record_row, name="record-row"),
    path(
        "servers/<slug:name>/operations/",
        views.server_operations,
        name="server-operations",
    ),
    path(
        "servers/<slug:name>/operations/recent/",
        views.server_operations_table,
        name="server-operations-table",
    ),
    path("servers/<slug:name>/kinds/<slug:kind>/", views.kind_table, name="kind-table"),
    path("servers/<slug:name>/check/", views.server_check, name="server-check"),
    path("servers/<slug:name>/repin/", views.server_repin, name="server-repin"),
    path("servers/<slug:name>/remove/", views.server_remove, name="server-remove"),
    path(
        "servers/<slug:name>/<slug:kind>/<slug:action>/",
        views.database_action,
        name="database-action",
    ),
    path(
        "servers/<slug:name>/<slug:kind>/<int:record_id>/secret/",
        views.record_secret,
        name="record-secret",
    ),
    path(
        "servers/<slug:name>/<slug:kind>/<int:record_id>/<slug:action>/",
        views.record_action,
        name="record-action",
    ),
    path("operations/<int:pk>/", views.operation_detail, name="operation-detail"),
    path(
        "operations/<int:pk>/output/",
        views.operation_output,
        name="operation-output",
    ),
    path(
        "operations/<int:pk>/cancel/",
        views.operation_cancel,
        name="operation-cancel",
    ),
    path("assets/<str:name>", views.static_file, name="asset"),
]
