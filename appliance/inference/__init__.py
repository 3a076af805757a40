"""On-site inference: runtimes as plugins, model files, tasks.

Start at ``tasks.build_tasks(settings, models_dir)``; each task's ``run(frame_bgr)``
returns a ``TaskResult``.  Modules: ``runtimes`` (ONNX Runtime / LiteRT plugins),
``settings`` (the ``[inference]`` config section), ``gate_ocr`` (+ ``text_detection``,
``text_recognition``, ``check_digit``, ``text_kinds``, ``iso6346``), ``face_anonymize``
(+ ``blazeface``), ``model_files`` (pinned model files and their sha256).
"""
