"""BlenderProc 2.8 run in-process (``bpy==4.2.0``) as a layout backend."""
