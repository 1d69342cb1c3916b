"""One model registry and one factory, in the manner of timm.

``create_model(name, num_classes)`` builds any registered model: the repository's own small
models (``small_cnn``, ``small_vit``, ``cifar_resnet20``, ...), any torchvision classifier as
``torchvision/<name>`` and any timm model as ``timm/<name>``. Nothing is downloaded: pretrained
weights come from a local file (``weights=``) or from a model whose package ships them.
"""

from lib.models.registry import (  # noqa: F401
    ModelSpec,
    available_models,
    create_model,
    get_layer,
    get_spec,
    load_checkpoint,
    register_model,
    save_checkpoint,
)
from lib.models.pretrained import PRETRAINED_KEYS, WEIGHTS_KEYS, check_pretrained, load_pretrained  # noqa: F401
from lib.models import cifar_resnet, efficientnet_lite, small  # noqa: F401  (registers the models)
