using System.CommandLine;
using GptSharp.Checkpoints;
using GptSharp.Model;

namespace GptSharp.Cli.Commands;

/// <summary><c>gptsharp convert IN OUT [--to safetensors|pth|checkpoint|gguf|hf|onnx] [--dtype f32|f16|q8_0] [--config FILE] [--quantize int8]</c>: between model formats.</summary>
internal static class ConvertCommand
{
    /// <param name="output">Where the summary goes (Console.Out by default; tests pass a writer).</param>
    public static Command Create(TextWriter? output = null)
    {
        var input = new Argument<string>("in") { Description = "Model to read: .safetensors (GptSharp or Hugging Face GPT-2), .pth, .gguf (gpt2), training checkpoint, run directory, Hugging Face GPT-2 folder or OpenAI GPT-2 folder." };
        var outputArgument = new Argument<string>("out") { Description = "File or folder to write (format from the extension unless --to is given; a folder is a Hugging Face GPT-2 folder)." };
        var to = new Option<string?>("--to") { Description = "Output format: safetensors (model file), pth (PyTorch), checkpoint (training checkpoint), gguf (llama.cpp), hf (Hugging Face GPT-2 folder) or onnx (that folder plus onnx/model.onnx with a KV cache)." };
        var dtype = new Option<string?>("--dtype") { Description = "Weight matrices in an exported file (gguf): f32 (default), f16 or q8_0." };
        var config = new Option<string?>("--config") { Description = "A config.json (the book's or Hugging Face keys) when the input's config cannot be inferred." };
        var quantize = ModelOptions.QuantizeOption("Store the linear weights quantized (a .safetensors model file that loads as int8)");
        var command = new Command("convert", "Convert a model between safetensors, PyTorch .pth, GptSharp training checkpoints, GGUF (llama.cpp), Hugging Face folders and ONNX.");
        command.Arguments.Add(input);
        command.Arguments.Add(outputArgument);
        command.Options.Add(to);
        command.Options.Add(dtype);
        command.Options.Add(config);
        command.Options.Add(quantize);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string inPath = parse.GetValue(input)!, outPath = parse.GetValue(outputArgument)!;
            var writer = output ?? Console.Out;
            var format = ModelConverter.ResolveFormat(outPath, parse.GetValue(to));
            string? configPath = parse.GetValue(config);
            var load = new LoadOptions { Config = configPath is null ? null : GptConfig.FromFile(configPath), Quantization = ModelOptions.QuantizationOf(parse, quantize) };
            var result = ModelConverter.Convert(inPath, outPath, format, load, ExportDTypeOf(parse.GetValue(dtype)));
            writer.WriteLine($"{inPath} ({result.InputFormat}) -> {outPath} ({format.ToString().ToLowerInvariant()}): {result.Tensors} tensors, {result.Parameters:N0} parameters");
            foreach (var note in result.Notes) writer.WriteLine($"note: {note}");
            return 0;
        }));
        return command;
    }

    private static ExportDType ExportDTypeOf(string? name) => name?.ToLowerInvariant() switch
    {
        null or "f32" or "float32" => ExportDType.Float32,
        "f16" or "float16" => ExportDType.Float16,
        "q8_0" => ExportDType.Q8_0,
        _ => throw new ArgumentException($"--dtype: unknown type '{name}' (expected f32, f16 or q8_0)."),
    };
}
