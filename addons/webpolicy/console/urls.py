"""The console's URLs."""

from django.contrib.auth import views as auth_views
from django.urls import path

from webpolicy.console import api, reviewrequests, views

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("events/<str:reference>/", views.event_page, name="event"),
    path("person/", views.person, name="person"),
    path("export.csv", views.export_csv, name="export"),
    path("access-log/", views.access_log, name="access_log"),
    path("review-requests/", reviewrequests.review_requests, name="review_requests"),
    path("review-requests/<str:reference>/answer", reviewrequests.answer,
         name="answer_review_request"),
    path("console.css", views.stylesheet, name="stylesheet"),
    path("api/events", api.events, name="api_events"),
    path("api/events/<str:reference>", api.event, name="api_event"),
    path("api/events/<str:reference>/review", api.review, name="api_review"),
]

handler403 = views.denied
