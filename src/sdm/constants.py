"""Names, paths and protocol numbers shared across the package, kept in one place."""

# Dataset names as used in configs and on the command line.
CUB200 = "cub200"
CARS196 = "cars196"
GLYPHS = "glyphs"
FOLDER = "folder"
CSV = "csv"
SOP = "sop"
INSHOP = "inshop"
ICONS = "icons"
DATASET_NAMES = (CUB200, CARS196, SOP, INSHOP, GLYPHS, ICONS, FOLDER, CSV)

DEFAULT_DATASET_ROOT = "data"
DEFAULT_EXPERIMENTS_ROOT = "experiments"

# On-disk layouts below the dataset root (the official archives unpack to these).
CUB_FOLDER = "cub2011"
CUB_IMAGES = "cub2011/CUB_200_2011/images"
CUB_ARCHIVE = "cub2011/CUB_200_2011.tgz"
CARS_FOLDER = "cars196"
CARS_ANNOTATIONS = "cars196/cars_annos.mat"
CARS_IMAGES = "cars196/car_ims"
GLYPHS_FOLDER = "glyphs"
GLYPHS_ARCHIVE = "glyphs/glyphs.npz"
GLYPHS_MANIFEST = "glyphs/manifest.json"
SOP_FOLDER = "Stanford_Online_Products"
SOP_INFO = "Stanford_Online_Products/Ebay_info.txt"
INSHOP_FOLDER = "inshop"
INSHOP_PARTITION = "inshop/list_eval_partition.txt"
ICONS_FOLDER = "icons"
ICONS_ARCHIVE = "icons/icons.npz"
ICONS_MANIFEST = "icons/manifest.json"
RESIZED_CACHE_FOLDER = "resized{size}"  # formatted with the cache's shorter-side size

# (images, classes) of the complete official datasets.
EXPECTED_COUNTS = {
    CUB200: (11788, 200),
    CARS196: (16185, 196),
    SOP: (120053, 22634),
    INSHOP: (52712, 7982),
}

# In-Shop's evaluation_status values (list_eval_partition.txt).
INSHOP_TRAIN = "train"
INSHOP_QUERY = "query"
INSHOP_GALLERY = "gallery"

# MLRC protocol.
NUM_FOLDS = 4
VAL_FRACTION = 0.125
TEST_FRACTION = 0.5

# Image pipelines: the paper's sizes (pixels), BN-Inception's default.
RESIZE = 256
CROP = 227
MIN_IMAGE_SIZE = 16
BNINCEPTION_MEAN_BGR_255 = (104.0, 117.0, 128.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Metric names (keys of retrieval_metrics and columns of every results table).
PRECISION_AT_1 = "precision_at_1"
R_PRECISION = "r_precision"
MAP_AT_R = "mean_average_precision_at_r"
METRIC_NAMES = (PRECISION_AT_1, R_PRECISION, MAP_AT_R)
METRIC_SHORT_NAMES = {PRECISION_AT_1: "P@1", R_PRECISION: "RP", MAP_AT_R: "MAP@R"}

# SDM defaults (the paper's setting).
SDM_PASSES = 8
SDM_MASKS = 8
SDM_EMBEDDING_DROPOUT = 0.05
SDM_FEATURE_DROPOUT = 0.1
SDM_ALPHA = 32.0

# --- Retrieval metrics (sdm.metrics) ---
# Key of retrieval_metrics' result holding how many queries were scored (those with R >= 1).
NUM_QUERIES = "num_queries"

# --- data layer (sdm.data) ---
# Input conventions of trunks: which pipeline sdm.data.transforms.build_transform builds.
BNINCEPTION_INPUT = "bninception"
IMAGENET_INPUT = "imagenet"
GLYPH_INPUT = "glyph"
INPUT_CONVENTIONS = (BNINCEPTION_INPUT, IMAGENET_INPUT, GLYPH_INPUT)

# --- experiment folders (sdm.engine.experiment, sdm.scores) ---
# Inside <experiments_root>/<name>/:
CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run_info.json"
CONFIG_CHANGES_FILE = "config_changes.json"
TRAINING_LOCK_FILE = "training.lock"  # locked while a process trains the experiment
RESULTS_FOLDER = "results"
RELEASED_RESULTS_FOLDER = "results_released"
TEST_RESULTS_NAME = "test_results"  # .json (everything), .csv and .md (percent table)
# Inside each fold_<k>/:
FOLD_FOLDER = "fold_{fold}"
LATEST_CHECKPOINT = "checkpoints/latest.pth"
BEST_CHECKPOINT = "checkpoints/best.pth"
PRETRAINED_CHECKPOINT = "checkpoints/epoch0.pth"
METRICS_CSV = "metrics.csv"
FOLD_DONE_FILE = "done.json"
TENSORBOARD_FOLDER = "tensorboard"
FOLD_LOG = "train.log"  # a fold's stdout and stderr under `sdm train --devices`

# --- experiment tracking (sdm.engine.tracking, training.loggers) ---
TENSORBOARD = "tensorboard"  # event files in each fold_<k>/tensorboard/ (the default)
MLFLOW = "mlflow"  # an MLflow tracking store or server (the [mlflow] extra)
LOGGER_NAMES = (TENSORBOARD, MLFLOW)
MLFLOW_RUN_FILE = "mlflow_run.json"  # beside config.yaml and in each fold_<k>/: the run ids
MLFLOW_DATABASE = "mlflow.db"  # the default local store: <experiments_root>/mlflow.db
MLFLOW_ARTIFACTS_FOLDER = "mlartifacts"  # its artifacts: <experiments_root>/mlartifacts/
MLFLOW_EXPERIMENT = "sdm"  # the default MLflow experiment (training.mlflow_experiment)

# --- test evaluation modes (sdm.engine.evaluate, sdm.scores) ---
SEPARATED = "separated"  # each fold model alone (128-d in the paper), mean over models
CONCATENATED = "concatenated"  # the fold models' normalized embeddings joined (512-d)
EVAL_MODES = (SEPARATED, CONCATENATED)
TABLE_ORDER = (CONCATENATED, SEPARATED)  # the paper's column order

# --- tuning studies (sdm.tune) ---
# Inside <experiments_root>/<study>/:
STUDY_FILE = "study.json"  # what was asked and the best trial
STUDY_DATABASE = "study.db"  # the default (SQLite) Optuna storage
TRIAL_FOLDER = "trial_{number}"  # each trial is an experiment folder
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best.yaml"
PRUNED_FILE = "pruned.json"  # in a pruned trial's folder: where it was stopped

# --- galleries (sdm.inference: sdm embed / index / search) ---
# Inside a gallery folder written by `sdm embed`:
EMBEDDINGS_FILE = "embeddings.npy"  # float32 (N, D), unit rows
ITEMS_FILE = "items.csv"  # row, path, label, class name
GALLERY_FILE = "gallery.json"  # the model's identity, written last
INDEX_FILE = "index.faiss"  # written by `sdm index`
INDEX_INFO_FILE = "index.json"  # what the index was built from
