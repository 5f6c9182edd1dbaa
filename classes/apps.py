from django.apps import AppConfig


class ClassesConfig(AppConfig):
    name = "classes"
    verbose_name = "Classes"

    def ready(self) -> None:
        # The classes API is a router of labs' NinjaAPI, mounted from here: labs never imports
        # classes (tests/test_architecture.py), and every process that loads the API has the router.
        from classes.api import router
        from labs.api import api

        api.add_router("/classes", router)
