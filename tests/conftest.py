import os
import tempfile

# Tests never touch the user's cache and never draw progress bars.
os.environ.setdefault("OOD_CACHE", tempfile.mkdtemp(prefix="ood_cache_test_"))
os.environ["TQDM_DISABLE"] = "1"
