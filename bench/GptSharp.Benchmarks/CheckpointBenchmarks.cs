using BenchmarkDotNet.Attributes;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Formats.PyTorch;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// Saving and loading the book's GPT_CONFIG_124M model (162M parameters, ~650 MB) as a safetensors model file and
/// as a PyTorch .pth. Loads go into an existing model, so the figures are I/O and checks, not allocation.
/// Includes the fsync of every atomic write. Run: --filter '*CheckpointBenchmarks*'
/// </summary>
[MemoryDiagnoser]
public class CheckpointBenchmarks
{
    private string _dir = "";
    private GptModel _model = null!;
    private GptModel _target = null!;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "gptsharp-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        var config = GptConfig.Book124M;
        _model = new GptModel(config, new FastRandom(1));
        _target = new GptModel(config);
        _model.Save(Path.Combine(_dir, "model.safetensors"));
        PthModelFile.SaveModel(_model, Path.Combine(_dir, "model.pth"));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _model.Dispose();
        _target.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark]
    public void SaveSafeTensors() => _model.Save(Path.Combine(_dir, "save.safetensors"));

    [Benchmark]
    public void LoadSafeTensorsInto() => _target.LoadInto(Path.Combine(_dir, "model.safetensors"));

    [Benchmark]
    public void SavePth() => PthModelFile.SaveModel(_model, Path.Combine(_dir, "save.pth"));

    [Benchmark]
    public void LoadPthInto()
    {
        using var file = PthFile.Open(Path.Combine(_dir, "model.pth"));
        StateDictLoader.LoadInto(_target, file.StateDict());
    }
}
